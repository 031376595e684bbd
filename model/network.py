"""The network: a from-scratch Conv2D / BatchNorm / MaxPool / Dropout classifier.

The model takes raw RGB pixels (0..255) at `config.IMAGE_SIZE`. Colour constancy and rescaling are
layers of the model, so the saved `.h5` and its LiteRT export apply them themselves.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from model import config

COLOUR_CONSTANCY_LAYER = "colour_constancy"
RESCALE_LAYER = "rescale"
FEATURES_LAYER = "features"
LOGITS_LAYER = "logits"
TEMPERATURE_LAYER = "temperature"
PROBABILITIES_LAYER = "probabilities"
# The strided stem and the three pooled blocks each halve the image, so the features, and the class
# activation maps served as the heat map, are the input size divided by this.
FEATURE_STRIDE = 16


@keras.saving.register_keras_serializable(package="skin_lesion")
class ShadesOfGrey(layers.Layer):
    """Shades-of-grey colour constancy: divide out each image's estimated illuminant colour.

    Images of different archives (cameras, dermatoscopes, white balance) differ in colour cast more
    than lesions of different classes do; normalising the cast stops the network from learning the
    source instead of the lesion. Output is RGB in 0..1.
    """

    def __init__(self, power: float = config.SHADES_OF_GREY_P, **kwargs):
        super().__init__(**kwargs)
        self.power = power

    def call(self, pixels):
        rgb = pixels / 255.0
        # Per-channel Minkowski p-norm mean over the image estimates the illuminant.
        illuminant = ops.power(
            ops.mean(ops.power(rgb + 1e-6, self.power), axis=(1, 2), keepdims=True), 1.0 / self.power
        )
        gain = ops.mean(illuminant, axis=-1, keepdims=True) / (illuminant + 1e-6)
        return ops.clip(rgb * gain, 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "power": self.power}


def build_model(
    num_classes: int = config.NUM_CLASSES,
    input_size: tuple[int | None, int | None] = config.IMAGE_SIZE,
    width: int = 32,
    dropout: float = 0.3,
    temperature: float = 1.0,
    deep_width_scale: float = 1.0,
) -> keras.Model:
    """Build the classifier: raw RGB in, class probabilities out. Pure: no I/O, no weights loaded.

    width is the channel count of the first block; each later block doubles it. temperature divides
    the logits before the softmax (fitted on validation after training to calibrate probabilities).
    input_size (None, None) accepts any size, for training on random crops. deep_width_scale
    multiplies the channels of block3 and the features convolution.
    """
    inputs = keras.Input(shape=(*input_size, 3), name="image")
    x = ShadesOfGrey(name=COLOUR_CONSTANCY_LAYER)(inputs)
    x = layers.Rescaling(2.0, offset=-1.0, name=RESCALE_LAYER)(x)  # centre on 0 for the first conv
    # A strided stem: the input carries more pixels than the lesion texture needs, and the first
    # full-resolution layer would otherwise cost most of the training time.
    x = _conv_bn_relu(x, width, strides=2, name="stem")
    x = _block(x, width, convs=1, dropout=0.1, name="block1")  # 64 -> 32 (a 128-px input)
    x = _block(x, width * 2, convs=2, dropout=0.1, name="block2")  # 32 -> 16
    # Width is cheap at the two low-resolution stages on a CPU, where the step time goes to the
    # large early maps: deep_width_scale 1.5 doubles the parameters for ~10% more step time (measured).
    deep_width = round(width * 4 * deep_width_scale)
    x = _block(x, deep_width, convs=2, dropout=0.2, name="block3")  # 16 -> 8
    # The last convolution keeps its 8x8 map (input / 16): its features feed both the classifier
    # and the class activation map (heat map) of the web app.
    x = _conv_bn_relu(x, deep_width * 2, name=FEATURES_LAYER)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    logits = layers.Dense(num_classes, name=LOGITS_LAYER)(x)
    scaled = layers.Rescaling(1.0 / temperature, name=TEMPERATURE_LAYER)(logits)
    outputs = layers.Activation("softmax", name=PROBABILITIES_LAYER, dtype="float32")(scaled)
    return keras.Model(inputs, outputs, name="skin_lesion_cnn")


def with_temperature(
    model: keras.Model, temperature: float, input_size: tuple[int, int] = config.IMAGE_SIZE
) -> keras.Model:
    """A copy of model at a fixed input size whose softmax divides the logits by temperature.

    The weights are copied unchanged; a model trained on smaller random crops (the network is
    fully convolutional up to its global pooling) becomes the fixed-size model that is saved.
    """
    config_ = model.get_config()
    for layer in config_["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = [None, *input_size, 3]
        if layer["name"] == TEMPERATURE_LAYER:
            layer["config"]["scale"] = 1.0 / temperature
    calibrated = keras.Model.from_config(config_)
    calibrated.set_weights(model.get_weights())
    return calibrated


def logits_model(model: keras.Model) -> keras.Model:
    """The same network with its uncalibrated logits as output (for fitting the temperature)."""
    return keras.Model(model.inputs, model.get_layer(LOGITS_LAYER).output)


@keras.saving.register_keras_serializable(package="skin_lesion")
class DihedralViews(layers.Layer):
    """The 8 symmetries of the square (4 rotations by 90 degrees, each also mirrored), stacked.

    (B, H, W, C) -> (8B, H, W, C), view-major. A dermoscopic lesion has no up or down, so a
    prediction should not change when the photo is turned; averaging over all 8 views makes the
    served prediction exactly the same for each of them (H must equal W).
    """

    def call(self, x):
        return ops.concatenate([dihedral(x, view) for view in range(8)], axis=0)


@keras.saving.register_keras_serializable(package="skin_lesion")
class DihedralMean(layers.Layer):
    """The mean over the 8 views of DihedralViews; spatial maps are turned back before averaging."""

    def __init__(self, spatial: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.spatial = spatial

    def call(self, x):
        views = ops.split(x, 8, axis=0)
        if self.spatial:
            views = [dihedral_inverse(v, view) for view, v in enumerate(views)]
        return ops.mean(ops.stack(views, axis=0), axis=0)

    def get_config(self):
        return {**super().get_config(), "spatial": self.spatial}


def dihedral(x, view: int):
    """View 0..7 of a (B, H, W, C) batch: rotate by 90 degrees view % 4 times, mirror if view >= 4."""
    for _ in range(view % 4):
        x = ops.flip(ops.transpose(x, (0, 2, 1, 3)), axis=1)  # np.rot90 on the (H, W) axes
    return ops.flip(x, axis=2) if view >= 4 else x


def dihedral_inverse(x, view: int):
    """Undo `dihedral(x, view)`."""
    if view >= 4:
        x = ops.flip(x, axis=2)
    for _ in range(view % 4):
        x = ops.flip(ops.transpose(x, (0, 2, 1, 3)), axis=2)  # rotate back by 90 degrees
    return x


def orientation_averaged(model: keras.Model, with_class_maps: bool = False) -> keras.Model:
    """The served prediction: logits averaged over the 8 views, then the model's temperature and softmax.

    Averaging logits (not probabilities) keeps the class maps exact: the spatial mean of the
    averaged maps is the averaged logits. with_class_maps adds the maps as a second output.
    """
    size = model.input_shape[1:3]
    inputs = keras.Input(shape=(*size, 3), name="image")
    # Colour constancy and rescaling act per pixel with image-wide statistics, so they commute with
    # the views: applied once before the views instead of eight times (measured ~1 ms at serving).
    normalised = model.get_layer(RESCALE_LAYER)(model.get_layer(COLOUR_CONSTANCY_LAYER)(inputs))
    outputs = [model.get_layer(LOGITS_LAYER).output]
    if with_class_maps:
        outputs.append(model.get_layer(LOGITS_LAYER)(model.get_layer(FEATURES_LAYER).output))
    single_view = keras.Model(model.get_layer(RESCALE_LAYER).output, outputs, name="single_view")
    per_view = single_view(DihedralViews(name="views")(normalised))
    per_view = per_view if isinstance(per_view, (list, tuple)) else [per_view]
    logits = DihedralMean(name="mean_logits")(per_view[0])
    scale = model.get_layer(TEMPERATURE_LAYER).scale
    scaled = layers.Rescaling(scale, name=TEMPERATURE_LAYER)(logits)
    probabilities = layers.Activation("softmax", name=PROBABILITIES_LAYER, dtype="float32")(scaled)
    if not with_class_maps:
        return keras.Model(inputs, probabilities, name="skin_lesion_cnn_d8")
    class_maps = DihedralMean(spatial=True, name="mean_class_maps")(per_view[1])
    return keras.Model(inputs, [probabilities, class_maps], name="skin_lesion_serving")


def averaged_logits_model(model: keras.Model) -> keras.Model:
    """The uncalibrated logits averaged over the 8 orientations (for fitting the temperature)."""
    averaged = orientation_averaged(model)
    return keras.Model(averaged.inputs, averaged.get_layer("mean_logits").output)


def serving_model(model: keras.Model) -> keras.Model:
    """Two outputs for serving: probabilities and per-class activation maps (logits at input / 16).

    Both are averaged over the 8 orientations (orientation_averaged). Global average pooling
    followed by a dense layer is linear, so applying the dense layer to every position of the
    feature map gives maps whose spatial mean is exactly the logits: the class activation map
    (Zhou et al. 2016) costs one small matmul and needs no gradient at serving time.
    """
    return orientation_averaged(model, with_class_maps=True)


def _conv_bn_relu(x, filters: int, name: str, strides: int = 1):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=name)(x)


def _block(x, filters: int, convs: int, dropout: float, name: str):
    for i in range(convs):
        x = _conv_bn_relu(x, filters, name=f"{name}_{i}")
    x = layers.MaxPooling2D(name=f"{name}_pool")(x)
    return layers.Dropout(dropout, name=f"{name}_dropout")(x)
