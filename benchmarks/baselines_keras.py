"""The paper's tagger in tf.keras (Keras 3, TensorFlow backend): a benchmark baseline only.

Same network as `transfer_jax.model.Tagger` in "running" (inference) / "train" modes:
Conv2D 3x3 'same' -> BatchNormalization(eps 1e-3, momentum 0.99) -> ELU -> MaxPool2D,
five times with the config's pools, channels_last input (batch, n_mels, frames, 1);
features = the global average of each block's pooled output, logits = Dense(last one).
`copy_flax_variables` loads a Flax tagger's variables so both compute the same numbers.
"""
from __future__ import annotations

import numpy as np

from transfer_jax.config import ModelConfig


def build(config: ModelConfig = ModelConfig()):
    """keras.Model: (batch, n_mels, frames, 1) -> [logits (batch, n_classes), features
    (batch, n_layers, channels)]."""
    import keras

    fe = config.frontend
    inp = keras.Input((fe.n_mels, fe.n_frames, 1), name="mel")
    x, feats = inp, []
    for i, pool in enumerate(config.pools, start=1):
        x = keras.layers.Conv2D(config.channels, 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(epsilon=config.bn_epsilon, momentum=config.bn_momentum,
                                            name=f"bn{i}")(x)
        x = keras.layers.ELU(name=f"elu{i}")(x)
        x = keras.layers.MaxPooling2D(pool, strides=pool, padding="valid", name=f"pool{i}")(x)
        feats.append(keras.layers.GlobalAveragePooling2D(name=f"gap{i}")(x))
    logits = keras.layers.Dense(config.n_classes, name="dense")(feats[-1])
    stacked = keras.layers.Lambda(lambda t: keras.ops.stack(t, axis=1), name="features")(feats)
    return keras.Model(inp, [logits, stacked], name="choi2017_tagger")


def copy_flax_variables(model, variables: dict) -> None:
    """Flax {'params', 'batch_stats'} -> the Keras model's weights (same layouts: HWIO)."""
    p, s = variables["params"], variables["batch_stats"]
    for layer in model.layers:
        name = layer.name
        if name.startswith("conv"):
            layer.set_weights([np.asarray(p[name]["kernel"]), np.asarray(p[name]["bias"])])
        elif name.startswith("bn"):
            layer.set_weights([np.asarray(p[name]["scale"]), np.asarray(p[name]["bias"]),
                               np.asarray(s[name]["mean"]), np.asarray(s[name]["var"])])
        elif name == "dense":
            layer.set_weights([np.asarray(p[name]["kernel"]), np.asarray(p[name]["bias"])])


def forward_fn(model, jit_compile: bool = False):
    """tf.function: mel (batch, n_mels, frames) -> features (batch, n_layers, channels)."""
    import tensorflow as tf

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def forward(mel):
        return model(mel[..., None], training=False)[1]

    return forward


def train_step_fn(model, learning_rate: float = 1e-3, jit_compile: bool = False):
    """tf.function train step (Adam, sigmoid cross-entropy, BatchNorm in training mode):
    (mel (batch, n_mels, frames), labels (batch, n_classes)) -> loss."""
    import keras
    import tensorflow as tf

    opt = keras.optimizers.Adam(learning_rate)
    opt.build(model.trainable_variables)

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def step(mel, labels):
        with tf.GradientTape() as tape:
            logits = model(mel[..., None], training=True)[0]
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step
