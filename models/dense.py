"""Rewrite a patch model (N, C, P, P) -> (N, 1) into its dense form (1, C, H, W) -> (1, 1, H', W')
whose output at (i, j) is the patch model applied to the input's window starting at (i, j).

The trick (shift-and-stitch by dilation): every layer is evaluated at every input position
instead of only where the patch model samples it. A 2 x 2 max-pooling of stride 2 becomes one of
stride 1 whose taps are `d` apart, and every layer after it sees its inputs d times further
apart (d doubles at each pooling); 'valid' convolutions get dilation d; the flatten + dense layer
becomes a convolution whose kernel is the last feature map (dilation d), and later dense layers
1 x 1 convolutions. Batch normalisation (inference), ReLU and the element-wise normalisation
steps work on any spatial size unchanged. The result is exact, not an approximation.

Only the layers the `dense` architecture uses are accepted; anything else (padding, strides,
other pooling) raises NotDense, and the caller evaluates patch by patch.
"""

import numpy as np

POINTWISE = {"Relu", "BatchNormalization", "Sub", "Mul", "Add", "Identity", "Dropout"}


class NotDense(Exception):
    pass


def dense_model(model_bytes):
    """The dense form of an ONNX patch model (bytes in, bytes out) and its receptive extent: the
    input side whose windows the outputs stand for."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    weights = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    nodes, dilation, channels, extent = [], 1, None, 1
    flattened = False
    for node in graph.node:
        attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
        if node.op_type in POINTWISE:
            nodes.append(node)
        elif node.op_type == "Conv":
            if any(value != 1 for value in attributes.get("strides", [1, 1]) + attributes.get("dilations", [1, 1])) or any(attributes.get("pads", [0] * 4)):
                raise NotDense(f"{node.name}: only unpadded convolutions of stride 1 can be evaluated densely")
            kernel = weights[node.input[1]].shape
            channels = kernel[0]
            extent += (kernel[2] - 1) * dilation
            nodes.append(_conv(helper, node.input, node.output, dilation, kernel[2:], node.name))
        elif node.op_type == "MaxPool":
            if attributes.get("kernel_shape") != [2, 2] or attributes.get("strides") != [2, 2] or any(attributes.get("pads", [0] * 4)) or attributes.get("ceil_mode", 0):
                raise NotDense(f"{node.name}: only 2 x 2 max-pooling of stride 2 can be evaluated densely")
            nodes.append(helper.make_node("MaxPool", node.input, node.output, name=node.name, kernel_shape=[2, 2], strides=[1, 1], dilations=[dilation, dilation]))
            extent += dilation
            dilation *= 2
        elif node.op_type == "Flatten" and not flattened:
            flattened = True
            flatten_input, flatten_output = node.input[0], node.output[0]
        elif node.op_type == "Gemm":
            if attributes.get("transB") != 1 or attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0 or not flattened:
                raise NotDense(f"{node.name}: unexpected dense layer")
            weight = weights[node.input[1]]
            if node.input[0] == flatten_output:  # the first dense layer reads the flattened last feature map
                side = int(round(np.sqrt(weight.shape[1] / channels)))
                if side * side * channels != weight.shape[1]:
                    raise NotDense(f"{node.name}: its inputs are not a square feature map")
                kernel = weight.reshape(weight.shape[0], channels, side, side)
                inputs = [flatten_input]
                extent += (side - 1) * dilation
            else:
                kernel = weight.reshape(weight.shape[0], weight.shape[1], 1, 1)
                inputs = [node.input[0]]
            tensor = next(tensor for tensor in graph.initializer if tensor.name == node.input[1])
            tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(kernel), node.input[1]))
            nodes.append(_conv(helper, inputs + list(node.input[1:3]), node.output, dilation, kernel.shape[2:], node.name))
        else:
            raise NotDense(f"{node.name}: {node.op_type} layers cannot be evaluated densely")
    if not flattened:
        raise NotDense("the model has no dense layers to turn into convolutions")
    _refuse_per_feature_operands(nodes, weights)
    del graph.node[:]
    graph.node.extend(nodes)
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.ClearField("shape")
    graph.input[0].type.tensor_type.shape.dim.extend(_dimensions("n", "channels", "height", "width"))
    graph.output[0].type.tensor_type.shape.dim.extend(_dimensions("n", 1, "out_height", "out_width"))
    del graph.value_info[:]
    return model.SerializeToString(), extent


def _conv(helper, inputs, outputs, dilation, kernel, name):
    return helper.make_node("Conv", inputs, outputs, name=name, dilations=[dilation, dilation], kernel_shape=list(kernel), strides=[1, 1], pads=[0, 0, 0, 0])


def _refuse_per_feature_operands(nodes, weights):
    """A 1-D operand of an element-wise Sub/Mul/Add would broadcast over the wrong axis of
    (N, C, H, W): the models this plugin writes have none (batch normalisation has its own node),
    so one is refused rather than guessed at."""
    for node in nodes:
        if node.op_type in {"Sub", "Mul", "Add"}:
            for name in node.input:
                if name in weights and weights[name].ndim == 1 and weights[name].size > 1:
                    raise NotDense(f"{node.name}: a per-feature {node.op_type}")


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
