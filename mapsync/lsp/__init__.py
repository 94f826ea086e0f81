"""`mapsync lsp`: a Language Server Protocol server for `.map` files (needs the ``lsp`` extra: pygls).

    workspace.py   open buffers over the disk, the project folder of a file, checked snapshots
    locate.py      what stands at a position of a parsed module (names, fields, calls, imports)
    complete.py    completion items from the snapshots and the project
    describe.py    hover text
    edits.py       definition, references, rename, formatting, code actions
    server.py      the pygls wiring (the only module that speaks JSON-RPC)

Everything here reads the same parser, checker, formatter and schema snapshots as the command line;
no rule of the language is written twice.
"""
