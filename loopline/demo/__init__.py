"""``loopline demo``: the whole loop on the local stack, watched and reported."""
