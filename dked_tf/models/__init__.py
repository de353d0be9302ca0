"""dked_tf.models"""
