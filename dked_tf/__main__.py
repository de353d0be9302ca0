import sys

from dked_tf.cli import main

sys.exit(main())
