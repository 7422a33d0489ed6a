from edge_agent.cli import main
import sys

sys.exit(main())
