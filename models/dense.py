"""Rewrite a patch model (N, C, P, P) -> (N, 1) into its dense form (1, C, H, W) -> (1, 1, H', W')
whose output at (i, j) is the patch model applied to the input's window starting at (i, j).

The trick (shift-and-stitch by dilation): every layer is evaluated at every input position
instead of only where the patch model samples it. A 2 x 2 max-pooling of stride 2 becomes one of
stride 1 whose taps are `d` apart, and every layer after it sees its inputs d times further
apart (d doubles at each pooling); 'valid' convolutions get dilation d; the flatten + dense layer
becomes a convolution whose kernel is the last feature map (dilation d), and later dense layers
1 x 1 convolutions. Batch normalisation (inference), ReLU and the element-wise normalisation
steps work on any spatial size unchanged. The result is exact, not an approximation.

Only the layers the `dense` and `small` architectures use are accepted, in any order; anything
else (padding, strides, other pooling) raises NotDenseError, and the caller evaluates patch by patch.
"""

from typing import NamedTuple

import numpy as np

POINTWISE = {"Relu", "BatchNormalization", "Sub", "Mul", "Add", "Abs", "Sign", "Sqrt", "Log", "Identity", "Dropout"}


class NotDenseError(Exception):
    pass


class Reach(NamedTuple):
    dilation: int  # how far apart this tensor's neighbouring taps are in the input
    channels: int
    extent: int  # the side of the input window each of its values depends on


def dense_model(model_bytes):
    """The dense form of an ONNX patch model (bytes in, bytes out) and its receptive extent: the
    input side whose windows the outputs stand for. An ensemble's members are branches from the
    normalised input joined by a Concat of their outputs (and their mean); each branch is
    rewritten alike."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    weights = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    # What each computed tensor has been through: its dilation, channels and receptive extent.
    state = {graph.input[0].name: Reach(1, None, 1)}
    flattened = {}  # a Flatten's output -> its input
    nodes = []
    for node in graph.node:
        attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
        reach = next((state[name] for name in node.input if name in state), None)
        if node.op_type == "Constant":  # a scalar such as asinh's + 1: a weight like the others
            weights[node.output[0]] = numpy_helper.to_array(attributes["value"])
            nodes.append(node)
        elif node.op_type in POINTWISE:
            nodes.append(node)
        elif reach is None:
            raise NotDenseError(f"{node.name}: a {node.op_type} layer on weights alone")
        elif node.op_type == "Conv":
            if any(
                value != 1 for value in attributes.get("strides", [1, 1]) + attributes.get("dilations", [1, 1])
            ) or any(attributes.get("pads", [0] * 4)):
                raise NotDenseError(f"{node.name}: only unpadded convolutions of stride 1 can be evaluated densely")
            kernel = weights[node.input[1]].shape
            nodes.append(_conv(helper, node.input, node.output, reach.dilation, kernel[2:], node.name))
            reach = Reach(reach.dilation, kernel[0], reach.extent + (kernel[2] - 1) * reach.dilation)
        elif node.op_type == "MaxPool":
            if (
                attributes.get("kernel_shape") != [2, 2]
                or attributes.get("strides") != [2, 2]
                or any(attributes.get("pads", [0] * 4))
                or attributes.get("ceil_mode", 0)
            ):
                raise NotDenseError(f"{node.name}: only 2 x 2 max-pooling of stride 2 can be evaluated densely")
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    node.input,
                    node.output,
                    name=node.name,
                    kernel_shape=[2, 2],
                    strides=[1, 1],
                    dilations=[reach.dilation] * 2,
                )
            )
            reach = Reach(2 * reach.dilation, reach.channels, reach.extent + reach.dilation)
        elif node.op_type == "Flatten" and node.input[0] not in flattened.values():
            flattened[node.output[0]] = node.input[0]
        elif node.op_type == "Gemm":
            reach, kernel, inputs = _gemm_as_conv(node, attributes, weights, reach, flattened)
            tensor = next(tensor for tensor in graph.initializer if tensor.name == node.input[1])
            tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(kernel), node.input[1]))
            nodes.append(_conv(helper, inputs, node.output, reach.dilation, kernel.shape[2:], node.name))
        elif node.op_type == "Concat":
            if attributes.get("axis") != 1 or not all(name in state for name in node.input):
                raise NotDenseError(f"{node.name}: only outputs can be joined")
            if len({(state[name].dilation, state[name].extent) for name in node.input}) != 1:
                raise NotDenseError(f"{node.name}: members of different receptive fields")
            reach = Reach(reach.dilation, sum(state[name].channels for name in node.input), reach.extent)
            nodes.append(node)
        elif node.op_type == "ReduceMean":  # the ensemble's mean over its members
            if attributes.get("axes") != [1] or attributes.get("keepdims", 1) != 1:
                raise NotDenseError(f"{node.name}: only a mean over the members can be evaluated densely")
            reach = Reach(reach.dilation, 1, reach.extent)
            nodes.append(node)
        else:
            raise NotDenseError(f"{node.name}: {node.op_type} layers cannot be evaluated densely")
        if reach is not None:  # None: an Identity of weights
            state.update((name, reach) for name in node.output)
    if not flattened:
        raise NotDenseError("the model has no dense layers to turn into convolutions")
    _refuse_per_feature_operands(nodes, weights)
    del graph.node[:]
    graph.node.extend(nodes)
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.ClearField("shape")
    graph.input[0].type.tensor_type.shape.dim.extend(_dimensions("n", "channels", "height", "width"))
    for value in graph.output:
        value.type.tensor_type.shape.dim.extend(_dimensions("n", state[value.name].channels, "out_height", "out_width"))
    del graph.value_info[:]
    return model.SerializeToString(), state[graph.output[0].name].extent


def _gemm_as_conv(node, attributes, weights, reach, flattened):
    """A dense layer as a convolution: (its output's reach, kernel, inputs). The first dense
    layer of a branch reads the flattened last feature map, so its kernel is that map's shape."""
    if attributes.get("transB") != 1 or attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0:
        raise NotDenseError(f"{node.name}: unexpected dense layer")
    weight = weights[node.input[1]]
    if node.input[0] in flattened:
        side = int(round(np.sqrt(weight.shape[1] / reach.channels)))
        if side * side * reach.channels != weight.shape[1]:
            raise NotDenseError(f"{node.name}: its inputs are not a square feature map")
        kernel = weight.reshape(weight.shape[0], reach.channels, side, side)
        source, extent = flattened[node.input[0]], reach.extent + (side - 1) * reach.dilation
    elif reach.channels == weight.shape[1]:
        kernel, source, extent = weight.reshape(*weight.shape, 1, 1), node.input[0], reach.extent
    else:
        raise NotDenseError(f"{node.name}: a dense layer before the feature map is flattened")
    return Reach(reach.dilation, weight.shape[0], extent), kernel, [source, *node.input[1:3]]


def _conv(helper, inputs, outputs, dilation, kernel, name):
    return helper.make_node(
        "Conv",
        inputs,
        outputs,
        name=name,
        dilations=[dilation, dilation],
        kernel_shape=list(kernel),
        strides=[1, 1],
        pads=[0, 0, 0, 0],
    )


def _refuse_per_feature_operands(nodes, weights):
    """A 1-D operand of an element-wise Sub/Mul/Add would broadcast over the wrong axis of
    (N, C, H, W): the models this plugin writes have none (batch normalisation has its own node),
    so one is refused rather than guessed at."""
    for node in nodes:
        if node.op_type in {"Sub", "Mul", "Add"}:
            for name in node.input:
                if name in weights and weights[name].ndim == 1 and weights[name].size > 1:
                    raise NotDenseError(f"{node.name}: a per-feature {node.op_type}")


def _dimensions(*values):
    from onnx import TensorShapeProto

    dimensions = []
    for value in values:
        dimension = TensorShapeProto.Dimension()
        if isinstance(value, int):
            dimension.dim_value = value
        else:
            dimension.dim_param = value
        dimensions.append(dimension)
    return dimensions
