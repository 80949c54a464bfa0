"""An example third-party model-opt plugin: the ``chain`` frontend and the ``example-lifo`` scheduler."""
