"""dked_tf.layers"""
