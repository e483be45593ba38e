from fghash.cli import main

main()
