from toolwarden.cli.main import main

main()
