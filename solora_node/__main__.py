import sys

from solora_node.cli import main

sys.exit(main())
