"""The seed's CycleGAN (TensorFlow 2 / Keras) training step at 256x256, timed side by side.

U-Net generators and PatchGAN discriminators with the seed's InstanceNormalization layer, its
persistent-tape train_step (two generators, two discriminators, cycle and identity losses). Needs
TensorFlow (a separate environment, as seed_pix2pix_tf.py):
    /tmp/tf/bin/python benchmarks/baselines/seed_cyclegan_tf.py 1 10
"""

import sys
import time

import tensorflow as tf
from tensorflow.keras import Sequential
from tensorflow.keras.layers import (
    Concatenate,
    Conv2D,
    Conv2DTranspose,
    Dropout,
    Input,
    Layer,
    LeakyReLU,
    ReLU,
    ZeroPadding2D,
)
from tensorflow.keras.losses import BinaryCrossentropy
from tensorflow.keras.models import Model
from tensorflow.keras.optimizers import Adam


class InstanceNormalization(Layer):
    def __init__(self, epsilon=1e-5):
        super().__init__()
        self.epsilon = epsilon

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale",
            shape=input_shape[-1:],
            initializer=tf.random_normal_initializer(1.0, 0.02),
            trainable=True,
        )
        self.offset = self.add_weight(
            name="offset", shape=input_shape[-1:], initializer="zeros", trainable=True
        )

    def call(self, x):
        mean, variance = tf.nn.moments(x, axes=(1, 2), keepdims=True)
        return self.scale * (x - mean) * tf.math.rsqrt(variance + self.epsilon) + self.offset


def init():
    return tf.random_normal_initializer(0.0, 0.02)


def downsample(filters, size, norm=True):
    layers = Sequential([Conv2D(filters, size, 2, "same", kernel_initializer=init(), use_bias=False)])
    if norm:
        layers.add(InstanceNormalization())
    layers.add(LeakyReLU())
    return layers


def upsample(filters, size, dropout=False):
    layers = Sequential(
        [
            Conv2DTranspose(filters, size, 2, "same", kernel_initializer=init(), use_bias=False),
            InstanceNormalization(),
        ]
    )
    if dropout:
        layers.add(Dropout(0.5))
    layers.add(ReLU())
    return layers


def create_generator():
    down = [downsample(64, 4, False), downsample(128, 4), downsample(256, 4)] + [
        downsample(512, 4) for _ in range(5)
    ]
    up = [upsample(512, 4, True) for _ in range(3)] + [upsample(f, 4) for f in (512, 256, 128, 64)]
    inputs = Input(shape=(None, None, 3))
    x, skips = inputs, []
    for d in down:
        x = d(x)
        skips.append(x)
    for u, s in zip(up, reversed(skips[:-1])):
        x = Concatenate()([u(x), s])
    out = Conv2DTranspose(3, 4, 2, "same", kernel_initializer=init(), activation="tanh")(x)
    return Model(inputs, out)


def create_discriminator():
    inp = Input(shape=(None, None, 3))
    x = downsample(64, 4, False)(inp)
    x = downsample(128, 4)(x)
    x = downsample(256, 4)(x)
    x = ZeroPadding2D()(x)
    x = Conv2D(512, 4, 1, kernel_initializer=init(), use_bias=False)(x)
    x = LeakyReLU()(InstanceNormalization()(x))
    x = ZeroPadding2D()(x)
    return Model(inp, Conv2D(1, 4, 1, kernel_initializer=init())(x))


bce = BinaryCrossentropy(from_logits=True)
gen_g, gen_f = create_generator(), create_generator()
dis_x, dis_y = create_discriminator(), create_discriminator()
opts = [Adam(2e-4, beta_1=0.5) for _ in range(4)]
LAMBDA = 10


@tf.function
def train_step(real_x, real_y):
    with tf.GradientTape(persistent=True) as tape:
        fake_y = gen_g(real_x, training=True)
        cycled_x = gen_f(fake_y, training=True)
        fake_x = gen_f(real_y, training=True)
        cycled_y = gen_g(fake_x, training=True)
        same_x = gen_f(real_x, training=True)
        same_y = gen_g(real_y, training=True)
        drx, dry = dis_x(real_x, training=True), dis_y(real_y, training=True)
        dfx, dfy = dis_x(fake_x, training=True), dis_y(fake_y, training=True)
        cyc = LAMBDA * (tf.reduce_mean(tf.abs(real_x - cycled_x)) + tf.reduce_mean(tf.abs(real_y - cycled_y)))
        g_loss = bce(tf.ones_like(dfy), dfy) + cyc + LAMBDA * 0.5 * tf.reduce_mean(tf.abs(real_y - same_y))
        f_loss = bce(tf.ones_like(dfx), dfx) + cyc + LAMBDA * 0.5 * tf.reduce_mean(tf.abs(real_x - same_x))
        dx_loss = 0.5 * (bce(tf.ones_like(drx), drx) + bce(tf.zeros_like(dfx), dfx))
        dy_loss = 0.5 * (bce(tf.ones_like(dry), dry) + bce(tf.zeros_like(dfy), dfy))
    for loss, model, opt in (
        (g_loss, gen_g, opts[0]),
        (f_loss, gen_f, opts[1]),
        (dx_loss, dis_x, opts[2]),
        (dy_loss, dis_y, opts[3]),
    ):
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))


B = int(sys.argv[1]) if len(sys.argv) > 1 else 1
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 10
x = tf.random.uniform((B, 256, 256, 3), -1, 1)
y = tf.random.uniform((B, 256, 256, 3), -1, 1)
for _ in range(3):
    train_step(x, y)
t = time.perf_counter()
for _ in range(steps):
    train_step(x, y)
print("seed TF cyclegan batch", B, "img/s", f"{B * steps / (time.perf_counter() - t):.4g}")
