"""`gadgetd repro`: the known FunctionFS bugs reproduced on the running kernel."""

# Here rather than in report.py: `gadgetd`'s command line names them without importing the rest.
SCENARIOS = ("contended_open", "deactivated_set_alt", "open_race", "delayed_open",
             "deactivated_reopen", "read_after_unbind")
