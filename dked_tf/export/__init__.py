"""dked_tf.export"""
