"""nbgrader configuration of the course: `nbgrader generate_assignment ch3` from here.

Sources with solutions and hidden tests are in solutions/, the student release in
exercises/. The gradebook and the submitted/autograded/feedback folders are the
instructor's, outside the repository: $LLMCOURSE_GRADING_DIR (default ~/llmcourse-grading).
`llmcourse release` and `llmcourse grade` use the same settings (llmcourse/grading/nbconfig.py).
"""
import os
from pathlib import Path

from llmcourse.grading.nbconfig import course_config

c = get_config()  # noqa: F821 -- provided by nbgrader when it loads this file
c.merge(course_config(Path(__file__).parent,
                      Path(os.environ.get("LLMCOURSE_GRADING_DIR", Path.home() / "llmcourse-grading"))))
