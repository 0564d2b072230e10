from imapclient.imapclient import DELETED as DELETED, IMAPClient as IMAPClient, SocketTimeout as SocketTimeout
