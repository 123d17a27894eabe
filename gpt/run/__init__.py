"""What a training or sampling command needs around the model.

    cli.py        one line and exit status 2 for bad input; number flags; surviving a closed stdout
    terminal.py   text for a person: control characters shown, not obeyed
    rundir.py     an --out-dir belongs to one run: its lock, no silent replacing
    memory.py     the memory a run needs against what the machine has, before allocating
    plot.py       the loss curve as an SVG
"""
