import faulthandler
import sys

from chaos.run import main

faulthandler.enable()  # a client library crashing the run says where
sys.exit(main())
