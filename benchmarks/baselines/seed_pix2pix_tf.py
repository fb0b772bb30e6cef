"""The seed's Pix2Pix (TensorFlow 2 / Keras) training step at 256x256, timed side by side.

Networks, losses and the two-tape train_step as in the cookbook recipe (../shared/seed/, third
recipe). Needs TensorFlow, which gankit does not depend on: run it from a separate environment, e.g.
    python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu
    /tmp/tf/bin/python benchmarks/baselines/seed_pix2pix_tf.py 1
"""

import sys
import time

import tensorflow as tf
from tensorflow.keras import Sequential
from tensorflow.keras.layers import (
    BatchNormalization,
    Concatenate,
    Conv2D,
    Conv2DTranspose,
    Dropout,
    Input,
    LeakyReLU,
    ReLU,
    ZeroPadding2D,
)
from tensorflow.keras.losses import BinaryCrossentropy
from tensorflow.keras.models import Model
from tensorflow.keras.optimizers import Adam


def downsample(filters, size, batch_norm=True):
    layers = Sequential()
    layers.add(
        Conv2D(
            filters, size, 2, "same", kernel_initializer=tf.random_normal_initializer(0, 0.02), use_bias=False
        )
    )
    if batch_norm:
        layers.add(BatchNormalization())
    layers.add(LeakyReLU())
    return layers


def upsample(filters, size, dropout=False):
    layers = Sequential()
    layers.add(
        Conv2DTranspose(
            filters, size, 2, "same", kernel_initializer=tf.random_normal_initializer(0, 0.02), use_bias=False
        )
    )
    layers.add(BatchNormalization())
    if dropout:
        layers.add(Dropout(0.5))
    layers.add(ReLU())
    return layers


def create_generator():
    down = [downsample(64, 4, False)] + [downsample(f, 4) for f in (128, 256, 512, 512, 512, 512, 512)]
    up = [upsample(512, 4, True) for _ in range(3)] + [upsample(f, 4) for f in (512, 256, 128, 64)]
    inputs = Input(shape=(256, 256, 3))
    x, skips = inputs, []
    for d in down:
        x = d(x)
        skips.append(x)
    for u, s in zip(up, reversed(skips[:-1])):
        x = Concatenate()([u(x), s])
    out = Conv2DTranspose(
        3, 4, 2, "same", kernel_initializer=tf.random_normal_initializer(0, 0.02), activation="tanh"
    )(x)
    return Model(inputs, out)


def create_discriminator():
    inp, tar = Input(shape=(256, 256, 3)), Input(shape=(256, 256, 3))
    x = Concatenate()([inp, tar])
    x = downsample(64, 4, False)(x)
    x = downsample(128, 4)(x)
    x = downsample(256, 4)(x)
    x = ZeroPadding2D()(x)
    x = Conv2D(512, 4, 1, kernel_initializer=tf.random_normal_initializer(0, 0.02), use_bias=False)(x)
    x = LeakyReLU()(BatchNormalization()(x))
    x = ZeroPadding2D()(x)
    out = Conv2D(1, 4, 1, kernel_initializer=tf.random_normal_initializer(0, 0.02))(x)
    return Model([inp, tar], out)


loss = BinaryCrossentropy(from_logits=True)
G, D = create_generator(), create_discriminator()
g_opt, d_opt = Adam(2e-4, beta_1=0.5), Adam(2e-4, beta_1=0.5)


@tf.function
def train_step(x, y):
    with tf.GradientTape() as gt, tf.GradientTape() as dt:
        fake = G(x, training=True)
        dr = D([x, y], training=True)
        df = D([x, fake], training=True)
        g_loss = loss(tf.ones_like(df), df) + 100 * tf.reduce_mean(tf.abs(y - fake))
        d_loss = loss(tf.ones_like(dr), dr) + loss(tf.zeros_like(df), df)
    g_opt.apply_gradients(zip(gt.gradient(g_loss, G.trainable_variables), G.trainable_variables))
    d_opt.apply_gradients(zip(dt.gradient(d_loss, D.trainable_variables), D.trainable_variables))


B = int(sys.argv[1]) if len(sys.argv) > 1 else 1
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
x = tf.random.uniform((B, 256, 256, 3), -1, 1)
y = tf.random.uniform((B, 256, 256, 3), -1, 1)
for _ in range(3):
    train_step(x, y)
t = time.perf_counter()
for _ in range(steps):
    train_step(x, y)
print("seed TF pix2pix batch", B, "img/s", f"{B * steps / (time.perf_counter() - t):.4g}")
