"""The run machinery: profiles and their resolution, parameter checks, the notebook runner, pass timings and the paper-profile estimate, the scorecard, figures and the report of a run."""
