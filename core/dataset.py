"""The training dataset file: one uncompressed .npz, readable with numpy alone.

Members (all .npy, no pickles):
  patches      float32 (N, C, P, P)  raw driver values, NaN-free (filled or skipped)
  targets      float32 (N,)          the target field, in target_units
  x, y         float64 (N,)          point coordinates in the stack's CRS
  pid          str (N,)              point ids
  split        int8 (N,)             0 training, 1 validation, 2 test
  band_names   str (C,)              the stack's band descriptions, in band order
  band_mean, band_std  float64 (C,)  over the training patches only
  patch_size   int, pixel_size float64 (2,), crs str (WKT), target_field str, target_units str
  nodata_policy str                  "skip" (patches with nodata left out) or "fill" (band means)
Stored without compression, so `patches` can be memory-mapped (open_dataset) instead of read.
split_fingerprint identifies the points and their split, so that a model can tell whether a
dataset is the one it was trained on.
"""

import hashlib
import zipfile

import numpy as np

from .errors import InputError
from .patches import TRAIN, band_statistics

CHUNK = 1024  # patches written at a time (~32 MB of 9 x 30 x 30)
PER_POINT = ("targets", "x", "y", "pid", "split")  # the members with a value per point
REQUIRED = ("patches", "targets", "x", "y", "split")  # in datasets of every version


def split_fingerprint(x, y, split):
    """sha256 (hex) of the points' coordinates and split codes, in their order: the same for the
    same points split alike, another for other points or another split of them."""
    digest = hashlib.sha256(len(split).to_bytes(8, "little"))
    for values, dtype in ((x, "<f8"), (y, "<f8"), (split, "<i1")):
        digest.update(np.ascontiguousarray(values, dtype).tobytes())
    return digest.hexdigest()


def write(path, patches, index, arrays, fill=None):
    """Writes patches[index] (any array-like indexed by arrays of rows, e.g. core.patches.PatchFile;
    NaN replaced by `fill` per band when given) and the small `arrays` into `path`."""
    n, bands, size, _ = len(index), *patches.shape[1:3], patches.shape[3]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
        with archive.open("patches.npy", "w", force_zip64=True) as member:
            header = {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                "fortran_order": False,
                "shape": (n, bands, size, size),
            }
            np.lib.format.write_array_header_2_0(member, header)
            for start in range(0, n, CHUNK):
                block = np.asarray(patches[np.asarray(index[start : start + CHUNK])], dtype=np.float32)
                if fill is not None:
                    block = np.where(np.isfinite(block), block, np.asarray(fill, np.float32)[None, :, None, None])
                member.write(np.ascontiguousarray(block).tobytes())


def open_dataset(path):
    """{member name: array}; `patches` memory-mapped read-only, the rest loaded. An InputError
    naming the file when it is not a whole dataset, or a target is not a finite number."""
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [name for name in REQUIRED if f"{name}" not in npz.files]
            if missing:
                raise InputError(
                    f"{path} is not a dataset written by 'Export training patches': it lacks {', '.join(missing)}. "
                    "Export the training patches again."
                )
            for name in npz.files:
                if name != "patches":
                    arrays[name] = npz[name]
        arrays["patches"] = _memmap_member(path, "patches.npy")
    except InputError:
        raise
    except OSError as error:  # a missing or unreadable file; zipfile's errors for other files
        raise InputError(f"{path} cannot be read: {error.strerror or 'not a dataset'}.") from None
    except (EOFError, ValueError, KeyError, zipfile.BadZipFile):
        raise InputError(
            f"{path} is not a whole dataset written by 'Export training patches': it is truncated, damaged or "
            "another kind of file. Export the training patches again."
        ) from None
    bad = np.count_nonzero(~np.isfinite(arrays["targets"]))
    if bad:
        raise InputError(
            f"{path}: {bad} of its {len(arrays['targets'])} targets are not finite numbers (±inf or NaN). Export the "
            "training patches again from points whose values are all finite."
        )
    return arrays


def _memmap_member(path, member):
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{member} in {path} is compressed and cannot be memory-mapped.")
    with open(path, "rb") as file:
        file.seek(info.header_offset)
        local = file.read(30)
        name_length = int.from_bytes(local[26:28], "little")
        extra_length = int.from_bytes(local[28:30], "little")
        file.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(file)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(file)
        offset = file.tell()
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran else "C")


def write_subset(path, data, keep, split):
    """The dataset of the points `keep` (indices into open_dataset's `data`) with the new `split`
    (one code per kept point), its band statistics those of its training patches."""
    mean, std = band_statistics(data["patches"], keep[split == TRAIN])
    arrays = {key: value[keep] if key in PER_POINT else value for key, value in data.items() if key != "patches"}
    arrays.update(split=split.astype(np.int8), band_mean=mean, band_std=std)
    write(path, data["patches"], keep, arrays)
