"""Print the terminal's size at start and after every SIGWINCH (for tests/test_terminal.py).

Lines read "WINCH N SIZE ROWS COLS", N counting the SIGWINCHs received so
far, the size asked of the terminal itself (TIOCGWINSZ on standard input), as
a full-screen program does. Ctrl-C (SIGINT, default action) ends it.
"""

import os
import signal

signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH})
count = 0
while True:
    size = os.get_terminal_size(0)
    print("WINCH %d SIZE %d %d" % (count, size.lines, size.columns), flush=True)
    signal.sigwaitinfo({signal.SIGWINCH})
    count += 1
