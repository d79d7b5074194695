"""`keras_embed.saving.keras2.optimizer`: the state an `.h5` file leaves out,
worked out as Keras 3 would have kept it."""

import keras
import numpy as np
import pytest

from keras_embed.saving.keras2 import optimizer as keras2_optimizer


@pytest.mark.parametrize("beta_1, steps", [(0.9, 1), (0.9, 4), (0.8, 7)])
def test_nadam_u_product_is_keras_3s_after_as_many_steps(beta_1, steps):
    # Keras 3's Nadam multiplies its product once a step, in float32; worked
    # out here from the step count alone. The two multiply the same float32
    # factors in another order: an ulp or two apart.
    variable = keras.Variable(np.ones((2, 2), "float32"))
    nadam = keras.optimizers.Nadam(0.01, beta_1=beta_1)
    for _ in range(steps):
        nadam.apply_gradients([(np.full((2, 2), 0.5, "float32"), variable)])
    np.testing.assert_allclose(keras2_optimizer.nadam_u_product(beta_1, steps),
                               nadam._u_product.numpy(), rtol=1e-6, atol=0)


def test_a_loss_scale_optimizer_keeps_its_slots_in_the_optimizer_it_wraps():
    adam = keras.optimizers.Adam()
    assert keras2_optimizer.inner(keras.optimizers.LossScaleOptimizer(adam)) is adam
    assert keras2_optimizer.inner(adam) is adam
