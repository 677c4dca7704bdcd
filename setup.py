"""uniq_tf: UNIQ non-uniform quantization for tf_keras / TensorFlow Model Optimization."""

from setuptools import find_packages, setup

CORE = [
    "tensorflow==2.21.*",
    "tf-keras==2.21.*",
    "tensorflow-model-optimization>=0.8.0,<0.9",
    "numpy>=1.26",
    "scipy>=1.11",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "absl-py>=1.2,<2",
    "scikit-learn>=1.4",
]
EXTRAS = {
    "data": ["tensorflow-datasets>=4.9", "keras-cv==0.9.0"],
    "tflite": ["ai-edge-litert>=2.0"],
    "fpga": ["onnx>=1.16", "onnxruntime>=1.18", "qonnx==1.0.0", "tf2onnx>=1.16"],
    "test": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "ruff>=0.6"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="uniq_tf",
    version="0.1.0",
    description="UNIQ (Uniform Noise Injection for non-uniform Quantization) for Keras 2 / TFMOT",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["uniq_tf*", "tflite_export*", "fpga_export*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
    license="Apache-2.0",
)
