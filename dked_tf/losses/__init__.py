"""dked_tf.losses"""
