from gadgetd.cli import main

main()
