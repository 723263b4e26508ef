"""What TensorRT's ONNX parser accepts: the table `export/trt_check.py` checks a bundle's graphs against.

Source: the operator support matrix of NVIDIA's ONNX parser, onnx/onnx-tensorrt `docs/operators.md`,
release/10.x branch ("TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20";
later 10.x releases widen the range and add operators). The baseline is TensorRT 10.3, the version
JetPack 6.1 and 6.2 ship; JetPack 5 (TensorRT 8.5) and JetPack 6.0 (TensorRT 8.6) parse up to opset 17
and lack the operators listed in `SINCE`. Operators of opset 21 and later that 10.x releases added
(Attention, RotaryEmbedding, RMSNormalization, TensorScatter) are left out: a graph of opset 18-20 cannot
hold them. Re-read the matrix when moving to another TensorRT release.
"""

from __future__ import annotations

BASELINE = "TensorRT 10.3 (JetPack 6.1/6.2)"
OPSET_RANGE = (9, 20)  # ai.onnx opsets the baseline parses
OLD_TRT_MAX_OPSET = 17  # TensorRT 8.5 and 8.6 (JetPack 5, JetPack 6.0)

# Operators of the default (ai.onnx) domain the parser imports ("Y" in the matrix).
SUPPORTED = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization BlackmanWindow
Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv
DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If
ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax
Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg
NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal
RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink
Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze STFT Sub Sum Tan
Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# Operators the matrix marks "N", with what to do instead when our own export could produce them.
UNSUPPORTED = {
    "MatMulInteger": "onnxruntime dynamic int8 (--precision int8): build TensorRT engines from an fp32 bundle; "
                     "TensorRT quantizes itself (--precision int8 with --calibration)",
    "DynamicQuantizeLinear": "onnxruntime dynamic int8 (--precision int8): build TensorRT engines from an fp32 bundle",
    "ConvInteger": "onnxruntime dynamic int8: build TensorRT engines from an fp32 bundle",
    "QLinearMatMul": "onnxruntime QOperator int8: use QDQ (QuantizeLinear/DequantizeLinear) form",
    "QLinearConv": "onnxruntime QOperator int8: use QDQ (QuantizeLinear/DequantizeLinear) form",
    **{op: "no TensorRT importer" for op in (
        "AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad Compress "
        "ConcatFromSequence DFT Det ImageDecoder MaxRoiPool MaxUnpool MelWeightMatrix Multinomial "
        "NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement RegexFullMatch SequenceAt "
        "SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap "
        "SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique"
    ).split()},
}

# Supported by the baseline but not by older releases still found on robots: op -> first TensorRT release.
SINCE = {"LayerNormalization": "8.6", "IsInf": "10.0", "Gelu": "10.0", "GroupNormalization": "10.0",
         "CastLike": "10.0", "Hardmax": "10.0", "Mish": "10.0"}

# Shapes that depend on tensor values, or control flow: TensorRT builds them, but they defeat shape
# specialization and some tactics; a VLA graph should not need them.
DATA_DEPENDENT = {"NonZero": "output length depends on the data", "NonMaxSuppression": "output length depends on the data",
                  "If": "control flow", "Loop": "control flow", "Scan": "control flow"}

# Inputs that the parser wants as build-time constants (initializer or Constant node): op -> input index.
CONSTANT_INPUTS = {
    **{op: 1 for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                        "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Squeeze", "Unsqueeze", "TopK",
                        "CumSum")},
    "Slice": 3,  # axes (TensorRT 8.x)
}

# QuantizeLinear / DequantizeLinear: zero point 0 and int8 only ("x_zero_point must be zero"; UINT8 only
# as a network input or output).
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
