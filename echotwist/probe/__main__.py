"""
C{python -m echotwist.probe}: the same as the C{echotwist-probe} command.
"""

from echotwist.probe import main

main()
