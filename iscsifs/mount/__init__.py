"""The mount: serving FUSE (fs.py, the only place FUSE errors are made), the inode tree, keeping it
true to the target (watch.py), mount points and logs."""
