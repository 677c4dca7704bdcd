"""UNIQ in one script: train a float CNN on the bundled digits, quantize it to 4-bit weights and
8-bit activations with the stage-wise schedule, and print its accuracy and BOPs.

    .venv/bin/python examples/quickstart.py      # about 30 s on 2 CPU cores

The code is the README's first example (tests/test_readme.py runs it and checks the two agree).
For the full training command with real data sets, see ``uniq-train --help``.
"""

import uniq_tf  # first: sets TF_USE_LEGACY_KERAS=1 (if unset) before TensorFlow loads

keras = uniq_tf.keras                # tf_keras (Keras 2); TFMOT does not work with Keras 3
x_train, y_train, x_test, y_test = uniq_tf.data.load_digits()   # 8x8 digits, bundled, in [0, 1]
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

model = uniq_tf.models.small_cnn((8, 8, 1), 10)   # or your own trained float model
model.compile(keras.optimizers.Adam(3e-3), loss, metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=64, epochs=10, verbose=0)

q = uniq_tf.quantize_model(model, weight_bits=4, activation_bits=8)
uniq_tf.calibrate_activations(q, x_train[:512], verbose=False)   # ranges start at the data's
schedule = uniq_tf.GradualQuantization(stages="layer", epochs_per_stage=2, final_epochs=1)
# (each stage: one epoch with noise, then one with the hard codebook; docs/method.md)
q.compile(keras.optimizers.Adam(5e-4), loss, metrics=["accuracy"])
q.fit(x_train, y_train, batch_size=64, epochs=schedule.total_epochs(q), callbacks=[schedule],
      verbose=0)
print("UNIQ W4A8 test accuracy:", q.evaluate(x_test, y_test, verbose=0)[1])

deployable = uniq_tf.strip_quantization(q)   # plain tf_keras model, kernels = codebook values
codebooks = uniq_tf.get_codebooks(q)         # per layer: levels and every weight's index
print(uniq_tf.summary(q))                    # per-layer bits, MACs and BOPs
