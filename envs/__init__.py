"""rlagents' own Gymnasium environments. Importing this package registers them with Gymnasium.

No environment is registered yet; image-based environments arrive with the image issue.
"""
