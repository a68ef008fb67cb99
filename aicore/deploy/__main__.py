from aicore.deploy.cli import main

main()
