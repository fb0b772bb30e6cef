"""The seed's semi-supervised GAN training loop (TensorFlow 2 / Keras), timed for a side-by-side comparison.

Networks and the per-step schedule as in the cookbook recipe (../shared/seed/, second recipe):
classifier on 50 labelled images, discriminator on 50 real then 50 generated images, GAN on 100
latents, each a Keras `train_on_batch`. `generate_latent_points`, which the seed never defines, is
np.random.randn. Prints GAN images per second (100 per step) on random data shaped like Fashion-MNIST.
    /tmp/tf/bin/python benchmarks/baselines/seed_ssgan_tf.py [steps]
"""

import sys
import time

import numpy as np
from tensorflow.keras import backend as K
from tensorflow.keras.layers import (
    Activation,
    Conv2D,
    Conv2DTranspose,
    Dense,
    Dropout,
    Flatten,
    Input,
    Lambda,
    LeakyReLU,
    Reshape,
    Softmax,
)
from tensorflow.keras.models import Model
from tensorflow.keras.optimizers import Adam


def custom_activation(x):
    s = K.sum(K.exp(x), axis=-1, keepdims=True)
    return s / (s + 1.0)


def discriminators():
    inp = Input(shape=(28, 28, 1))
    x = inp
    for _ in range(3):
        x = LeakyReLU(0.2)(Conv2D(128, 3, strides=2, padding="same")(x))
    x = Dense(10)(Dropout(0.4)(Flatten()(x)))
    return Model(inp, Softmax()(x)), Model(inp, Lambda(custom_activation)(x))


def generator():
    inp = Input(shape=(100,))
    x = Reshape((7, 7, 128))(LeakyReLU(0.2)(Dense(128 * 7 * 7)(inp)))
    for _ in range(2):
        x = LeakyReLU(0.2)(Conv2DTranspose(128, 4, strides=2, padding="same")(x))
    return Model(inp, Activation("tanh")(Conv2D(1, 7, padding="same")(x)))


clf, dis = discriminators()
clf.compile(loss="sparse_categorical_crossentropy", optimizer=Adam(2e-4, beta_1=0.5), metrics=["accuracy"])
dis.compile(loss="binary_crossentropy", optimizer=Adam(2e-4, beta_1=0.5))
gen = generator()
dis.trainable = False
gan = Model(gen.input, dis(gen.output))
gan.compile(loss="binary_crossentropy", optimizer=Adam(2e-4, beta_1=0.5))

X = np.random.uniform(-1, 1, (60000, 28, 28, 1)).astype(np.float32)
X_sup, y_sup = X[:1000], np.random.randint(0, 10, 1000)


def step():
    i = np.random.randint(0, 1000, 50)
    clf.train_on_batch(X_sup[i], y_sup[i])
    dis.train_on_batch(X[np.random.randint(0, 60000, 50)], np.ones((50, 1)))
    fake = gen.predict(np.random.randn(50, 100), verbose=0)
    dis.train_on_batch(fake, np.zeros((50, 1)))
    gan.train_on_batch(np.random.randn(100, 100), np.ones((100, 1)))


steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
for _ in range(5):
    step()
t = time.perf_counter()
for _ in range(steps):
    step()
print("seed TF ssgan GAN img/s", 100 * steps / (time.perf_counter() - t))
