"""ctbench — certified training of neural networks, rebuilt from CTBench (Mao et al., ICML 2025).

Public entry points are grouped by axis, each a name-based registry:

* ``ctbench.data``    — datasets (``mnist``, ``cifar10``, ``tinyimagenet``, ``mnist_mini``)
* ``ctbench.models``  — architectures (``cnn7``, ``cnn5``, ``cnn_small``, ...)
* ``ctbench.bounds``  — bound propagation (``IBP``, ``CROWN-IBP``, ``CROWN``, ``alpha-CROWN``)
"""

__version__ = "0.1.0"
