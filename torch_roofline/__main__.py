import sys

from torch_roofline.cli import main

sys.exit(main())
