"""Reports of a check run: JSON summary, JUnit XML, markdown summary, run history, and the HTML report."""
