"""Checks of the Apptainer definition files in containers/."""
