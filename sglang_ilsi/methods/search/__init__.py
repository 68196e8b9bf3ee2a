"""Search methods (kind ``search``, need ``tree``): one file per method;
``base.py`` holds their base class, the tree they search and shared pieces."""
