"""Frontends: one package per framework (``keras/``, ``torch/``, ``onnx/``) on a shared
toolkit (``common/``).

Each frontend has the same shape: a ``context`` (the translation state and its converter
table), ``converters/`` grouped by family (weights, activations, pooling, shape,
elementwise), a translation driver, its framework's training mapping (what trains, loss,
optimizer), its coremltools fallback for pipeline backbones (Keras, torch) and an ``export``
entry point that ends in ``export.export_graph``. A converter is one function registered
under the framework's op name; it reads the framework's op and appends IR nodes through the
one emitter (``common.builder.append_node``).

``common/`` holds what the three share: node naming and emission, the one
refuse-or-downgrade mechanism (``allow_unsupported``), ``image_input`` parsing, the loss
plan, pooling geometry, the torch/ONNX translation rules and the coremltools fallback.
Options (training configuration, model options, policy) come from ``options.ExportOptions``.
"""
