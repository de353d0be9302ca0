"""dked_tf.ops"""
