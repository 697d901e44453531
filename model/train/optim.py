"""Adam with TensorFlow's fused update kernel.

Keras 3's Adam updates each variable with about ten elementwise ops, each a
pass over the variable's memory; on the DCGAN's 24M parameters that was about
0.17 s of a 2.3 s bfloat16 step on the 2-core Xeon. ``ResourceApplyAdam`` does
the same update in one pass (docs/training.md).
"""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="dcgan")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose per-variable update is one ``ResourceApplyAdam``.

    Same formula and state as the parent (``m``, ``v``, ``iterations``; epsilon
    added outside the square root, bias corrections folded into the step size),
    so checkpoints are interchangeable. AMSGrad falls back to the parent.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.handle, v=v.handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))
