import sys

from src.config.check import main

sys.exit(main())
