"""Selection rules (kind ``selection``, need ``samples``): one file per rule;
``base.py`` holds their base class and shared pieces."""
