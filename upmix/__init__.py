"""filmrestore.upmix"""
