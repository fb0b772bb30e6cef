"""The seed's DCGAN (TensorFlow 2 / Keras) training step, timed for a side-by-side comparison.

Networks and train_step as in the cookbook recipe (../shared/seed/, first recipe). Needs TensorFlow,
which gankit does not depend on: run it from a separate environment, e.g.
    python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu
    /tmp/tf/bin/python benchmarks/baselines/seed_dcgan_tf.py 512
"""

import sys
import time

import tensorflow as tf
from tensorflow.keras.layers import (
    Activation,
    BatchNormalization,
    Conv2D,
    Conv2DTranspose,
    Dense,
    Dropout,
    Flatten,
    Input,
    LeakyReLU,
    Reshape,
)
from tensorflow.keras.losses import BinaryCrossentropy
from tensorflow.keras.models import Model
from tensorflow.keras.optimizers import Adam

noise_dimension = 100


class DCGAN:
    def __init__(self):
        self.loss = BinaryCrossentropy(from_logits=True)
        self.generator = self.create_generator()
        self.discriminator = self.create_discriminator()
        self.generator_opt = Adam(learning_rate=1e-4)
        self.discriminator_opt = Adam(learning_rate=1e-4)

    @staticmethod
    def create_generator(alpha=0.2):
        input = Input(shape=(100,))
        x = Dense(units=7 * 7 * 256, use_bias=False)(input)
        x = LeakyReLU(alpha)(x)
        x = BatchNormalization()(x)
        x = Reshape((7, 7, 256))(x)
        x = Conv2DTranspose(128, (5, 5), strides=(1, 1), padding="same", use_bias=False)(x)
        x = LeakyReLU(alpha)(x)
        x = BatchNormalization()(x)
        x = Conv2DTranspose(64, (5, 5), strides=(2, 2), padding="same", use_bias=False)(x)
        x = LeakyReLU(alpha)(x)
        x = BatchNormalization()(x)
        x = Conv2DTranspose(1, (5, 5), strides=(2, 2), padding="same", use_bias=False)(x)
        return Model(input, Activation("tanh")(x))

    @staticmethod
    def create_discriminator(alpha=0.2, dropout=0.3):
        input = Input(shape=(28, 28, 1))
        x = Conv2D(64, (5, 5), strides=(2, 2), padding="same")(input)
        x = LeakyReLU(alpha)(x)
        x = Dropout(dropout)(x)
        x = Conv2D(128, (5, 5), strides=(2, 2), padding="same")(x)
        x = LeakyReLU(alpha)(x)
        x = Dropout(dropout)(x)
        return Model(input, Dense(1)(Flatten()(x)))

    def discriminator_loss(self, real, fake):
        return self.loss(tf.ones_like(real), real) + self.loss(tf.zeros_like(fake), fake)

    def generator_loss(self, fake):
        return self.loss(tf.ones_like(fake), fake)

    @tf.function
    def train_step(self, images, batch_size):
        noise = tf.random.normal((batch_size, noise_dimension))
        with tf.GradientTape() as gen_tape, tf.GradientTape() as dis_tape:
            generated_images = self.generator(noise, training=True)
            real = self.discriminator(images, training=True)
            fake = self.discriminator(generated_images, training=True)
            gen_loss = self.generator_loss(fake)
            disc_loss = self.discriminator_loss(real, fake)
        gg = gen_tape.gradient(gen_loss, self.generator.trainable_variables)
        dg = dis_tape.gradient(disc_loss, self.discriminator.trainable_variables)
        self.generator_opt.apply_gradients(zip(gg, self.generator.trainable_variables))
        self.discriminator_opt.apply_gradients(zip(dg, self.discriminator.trainable_variables))


B = int(sys.argv[1]) if len(sys.argv) > 1 else 512
m = DCGAN()
imgs = tf.random.uniform((B, 28, 28, 1), -1, 1)
for _ in range(3):
    m.train_step(imgs, B)
n = 10
t = time.perf_counter()
for _ in range(n):
    m.train_step(imgs, B)
print("seed TF dcgan batch", B, "img/s", B * n / (time.perf_counter() - t))
