"""The intake service: reception, the person, assessments, case stages, closure, reopening."""
