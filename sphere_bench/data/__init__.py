"""Spherical datasets: grids, rotations, projection of planar images onto the sphere, caching."""
