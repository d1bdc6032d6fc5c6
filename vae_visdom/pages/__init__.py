"""What is built from run folders, not from a live run: the runs home (home, home_table, home_form), the
comparison and family envs (compare, family), a run drawn again from its log (replay, log_screen, browse).

The rule of this wing: it reads run folders as untrusted data and never imports torch (the runs home's process
stays light; tests/test_cli_quick.py checks each module).
"""
