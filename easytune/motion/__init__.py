"""Skeleton, kinematics, HumanML3D 263-d features, BVH import and datasets."""
