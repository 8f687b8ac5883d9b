"""Statistical significance as in the paper: a one-sided paired t-test over seeds (revisiting_bn.t_test).

    python t_test.py --proposed 91.7 93.4 92.2 90.0 91.9 --baseline 91.0 92.7 92.2 90.1 91.5
"""
from revisiting_bn.t_test import *  # noqa: F401,F403
from revisiting_bn.t_test import __all__  # noqa: F401

if __name__ == '__main__':
    from revisiting_bn.cli import exit_on_error
    from revisiting_bn.t_test import main
    with exit_on_error('t_test.py'):
        main()
