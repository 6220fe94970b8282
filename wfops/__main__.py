from wfops.cli import main

main()
