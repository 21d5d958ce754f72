"""Apple's equality of feature types and descriptions (``mlmodel/src/Comparison.cpp``).

Core ML compares training inputs with prediction inputs, and pipeline inputs with what feeds
them, by ``isEquivalent``: same name and "equal" type, where equal ignores the optional flag
and the short description, compares a MultiArray's data type and rank (its shape only when
neither side has a flexible shape), an image's width, height and color space, a dictionary's
key type and a sequence's element type. Same code in every release tag 3.0 to 9.0.
"""

from __future__ import annotations


def _array_rank(array) -> int:
    flexibility = array.WhichOneof("ShapeFlexibility")
    if flexibility == "enumeratedShapes":
        shapes = array.enumeratedShapes.shapes
        return len(shapes[0].shape) if shapes else 0
    if flexibility == "shapeRange":
        return len(array.shapeRange.sizeRanges)
    return len(array.shape)


def types_equal(a, b) -> bool:
    """Apple's ``operator==(FeatureType, FeatureType)``."""
    kind = a.WhichOneof("Type")
    if kind != b.WhichOneof("Type"):
        return False
    if kind == "multiArrayType":
        x, y = a.multiArrayType, b.multiArrayType
        if x.dataType != y.dataType or _array_rank(x) != _array_rank(y):
            return False
        if x.WhichOneof("ShapeFlexibility") is None and y.WhichOneof("ShapeFlexibility") is None:
            return list(x.shape) == list(y.shape)
        return True
    if kind == "imageType":
        x, y = a.imageType, b.imageType
        return (x.width, x.height, x.colorSpace) == (y.width, y.height, y.colorSpace)
    if kind == "dictionaryType":
        return a.dictionaryType.WhichOneof("KeyType") == b.dictionaryType.WhichOneof("KeyType")
    if kind == "sequenceType":
        return a.sequenceType.WhichOneof("Type") == b.sequenceType.WhichOneof("Type")
    if kind == "stateType":
        x, y = a.stateType.arrayType, b.stateType.arrayType
        return x.dataType == y.dataType and list(x.shape) == list(y.shape)
    return True


def equivalent(a, b) -> bool:
    """Apple's ``isEquivalent(FeatureDescription, FeatureDescription)``: name and type."""
    return a.name == b.name and types_equal(a.type, b.type)
