"""Errors that end a gadgetd command with a one-line message and a known exit status."""


class GadgetdError(Exception):
    """A failure the user can act on; the CLI prints it as one line and exits with `status`."""

    status = 1


NO_VALUE = object()  # a key whose value there is nothing to show of (missing, a section)


class TemplateError(GadgetdError):
    """A template that cannot be used: names the file, the key and the offending value."""

    status = 2

    def __init__(self, source, key, problem, value=NO_VALUE):
        self.source, self.key, self.problem, self.value = source, key, problem, value
        where = f"{source}: {key}"
        if value is not NO_VALUE:
            where += f" = {value!r}"
        super().__init__(f"{where}: {problem}")


class SetupError(GadgetdError):
    """The gadget could not be brought up (no UDC, gadget exists, kernel refused)."""

    status = 3
