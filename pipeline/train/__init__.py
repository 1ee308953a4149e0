"""One training loop for every family: the research step, the loop, callbacks for the rest."""
