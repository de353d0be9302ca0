"""dked_tf.evaluation"""
