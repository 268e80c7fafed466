from osprey_core.cli import main

main()
